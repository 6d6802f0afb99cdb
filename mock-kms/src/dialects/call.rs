//! The frame every dialect's call runs in, so faults, seal and audit behave the same under all:
//! hang → latency → (sealed / not ready) → the dialect's auth → throttle → deny → error rate →
//! the operation (`key_disabled` applies there) → corrupt; one audit record per call, also when
//! the client goes away (`Abandoned`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};

use super::Dialect;
use crate::api::{Action, AuditRecord, ErrorCode, KeyMetadata, KeyState, Outcome};
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::node::Node;

/// One call of a dialect operation, recorded in the audit log exactly once.
pub(crate) struct Call {
    pub node: Arc<Node>,
    /// The id answered in the dialect's request-id header and kept in the audit record.
    pub request_id: String,
    /// The native action the operation maps to (faults and counters use it).
    pub action: Option<Action>,
    record: Option<AuditRecord>,
    started: Instant,
}

impl Call {
    /// Starts the record of a call of `operation` (the dialect's own name), mapped to `action`.
    pub fn new(node: &Arc<Node>, dialect: Dialect, operation: &str, action: Option<Action>) -> Self {
        let request_id = crate::crypto::random_uuid();
        let record = AuditRecord::started(&request_id, &node.id, dialect, operation, action);
        Self { node: node.clone(), request_id, action, record: Some(record), started: Instant::now() }
    }

    /// Records the access key (or token holder) the request claimed.
    pub fn set_access_key(&mut self, access_key: Option<&str>) {
        if let Some(record) = &mut self.record {
            record.access_key = access_key.map(|a| a.chars().take(128).collect());
        }
    }

    /// Records why the client called, when it says so in [`crate::api::HEADER_CALLER`] (kms-lab's
    /// own clients do in every dialect; the clouds' SDKs never do).
    pub fn set_caller(&mut self, headers: &axum::http::HeaderMap) {
        if let Some(record) = &mut self.record {
            record.caller = headers.get(crate::api::HEADER_CALLER).and_then(|v| v.to_str().ok()).and_then(crate::api::Caller::from_name);
        }
    }

    /// Records the key (and version) the call used.
    pub fn set_key(&mut self, key_id: &str, version_id: Option<&str>) {
        if let Some(record) = &mut self.record {
            record.key_id = Some(key_id.chars().take(crate::blob::MAX_ID_LEN).collect());
            if let Some(version_id) = version_id {
                record.key_version_id = Some(version_id.to_owned());
            }
        }
    }

    /// Records the secret a secrets-manager call names.
    pub fn set_secret(&mut self, secret_name: &str) {
        if let Some(record) = &mut self.record {
            record.secret_name = Some(secret_name.chars().take(crate::secrets::MAX_SECRET_NAME_LEN).collect());
        }
    }

    /// Hang and latency faults, then the key store if the node serves (else `Sealed` or
    /// `ServiceUnavailable`).
    pub async fn enter(&self) -> Result<Arc<KeyStore>, KmsError> {
        let mut shutdown = self.node.shared.shutdown.subscribe();
        self.node.faults.hang(self.action, &mut shutdown).await?;
        if let Some(latency) = self.node.faults.latency(self.action) {
            tokio::time::sleep(latency).await;
        }
        Ok(self.node.serving_keystore()?.clone())
    }

    /// Throttle, deny and error-rate faults (after authentication, as on the native API).
    pub fn admit(&self, operation: &str) -> Result<(), KmsError> {
        self.node.faults.admit(self.action, operation)
    }

    /// The keys a `key_disabled` fault disables for this call.
    pub fn disabled(&self) -> BTreeSet<String> {
        self.node.faults.disabled_keys(self.action)
    }

    /// `Err(KeyNotEnabled)` if a `key_disabled` fault disables `key_id` (or `key_id/version_id`).
    pub fn check_fault_disabled(&self, key_id: &str, version_id: Option<&str>) -> Result<(), KmsError> {
        let disabled = self.disabled();
        let version = version_id.map(|v| format!("{key_id}/{v}"));
        if disabled.contains(key_id) || version.is_some_and(|v| disabled.contains(&v)) {
            return Err(KmsError::KeyNotEnabled { key_id: key_id.to_owned(), state: KeyState::Disabled });
        }
        Ok(())
    }

    /// `metadata` as a `key_disabled` fault makes it look (Disabled).
    pub fn shown(&self, mut metadata: KeyMetadata) -> KeyMetadata {
        if metadata.key_state == KeyState::Enabled && self.disabled().contains(&metadata.key_id) {
            metadata.key_state = KeyState::Disabled;
        }
        metadata
    }

    /// Whether to corrupt this call's returned data: `Some(random)` picks the byte to flip.
    pub fn corruption(&self) -> Option<u64> {
        self.node.faults.corruption(self.action)
    }

    /// Whether `access_key`'s access policy allows this call's action on `key_id` (`Forbidden`
    /// naming both if not), as on the native API.
    pub fn authorize(&self, access_key: &str, key_id: Option<&str>) -> Result<(), KmsError> {
        self.authorize_on(access_key, key_id, None)
    }

    /// [`Call::authorize`] for a call that may name a secret (`secret/<name>` is then the resource
    /// of a secrets-manager action, `secret/*` that of `ListSecrets`).
    pub fn authorize_on(&self, access_key: &str, key_id: Option<&str>, secret_name: Option<&str>) -> Result<(), KmsError> {
        let Some(action) = self.action else { return Ok(()) };
        self.node.shared.policies.check(access_key, action, &crate::policy::resource(action, key_id, secret_name))
    }

    /// Encrypts under `key_id`'s current version (a `key_disabled` fault refuses it, a `corrupt`
    /// fault flips a byte of the blob); records key and version. Returns the version and blob.
    pub fn encrypt(
        &mut self,
        store: &KeyStore,
        key_id: &str,
        plaintext: &[u8],
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<(String, Vec<u8>), KmsError> {
        self.set_key(key_id, None);
        self.check_fault_disabled(key_id, None)?;
        let sealed = store.encrypt(key_id, plaintext, context)?;
        self.set_key(key_id, Some(&sealed.version_id));
        let mut blob = sealed.blob;
        if let Some(pick) = self.corruption() {
            crate::faults::flip_byte(&mut blob, pick);
        }
        Ok((sealed.version_id, blob))
    }

    /// Decrypts a key store blob (a `key_disabled` fault on its key or version refuses it, a
    /// `corrupt` fault flips a byte of the plaintext); records key and version.
    pub fn decrypt(
        &mut self,
        store: &KeyStore,
        blob: &[u8],
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<crate::keystore::Decrypted, KmsError> {
        let parsed = crate::blob::parse(blob).map_err(KmsError::InvalidCiphertext)?;
        let (key_id, version_id) = (parsed.key_id.to_owned(), parsed.version_id.to_owned());
        self.set_key(&key_id, Some(&version_id));
        self.check_fault_disabled(&key_id, Some(&version_id))?;
        let mut opened = store.decrypt(blob, context)?;
        if let Some(pick) = self.corruption() {
            crate::faults::flip_byte(&mut opened.plaintext, pick);
        }
        Ok(opened)
    }

    /// Ends the call: records `Ok` or `failed`'s native code, and answers the JSON `body` with
    /// `status`, the dialect's `content_type` and the request id in its `request_id_header`.
    pub fn answer(
        &mut self,
        status: u16,
        failed: Option<ErrorCode>,
        body: &serde_json::Value,
        content_type: &'static str,
        request_id_header: &'static str,
    ) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode};
        use axum::response::IntoResponse;
        self.finish(failed.map_or(Ok(()), Err));
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(request_id_header, value);
        }
        response
    }

    /// Writes the record with `Ok` or the native error code the call failed with.
    pub fn finish(&mut self, result: Result<(), ErrorCode>) {
        self.finish_with(result.map_or_else(Outcome::Refused, |()| Outcome::Ok));
    }

    fn finish_with(&mut self, outcome: Outcome) {
        if let Some(mut record) = self.record.take() {
            record.outcome = outcome;
            record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(
                node = %record.node, request_id = %record.request_id, dialect = %record.dialect, operation = %record.operation,
                key_id = ?record.key_id, outcome = %record.outcome, latency_ms = record.latency_ms, "call"
            );
            self.node.shared.audit.record(record);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish_with(Outcome::Abandoned);
    }
}

/// Reads a request body of at most `limit` bytes; a larger one is an `InvalidParameter` naming
/// the limit (each dialect answers it in its own error shape, never as a bare HTTP 413).
pub(crate) async fn read_body(body: Body, limit: usize, what: &str) -> Result<Bytes, KmsError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| KmsError::InvalidParameter(format!("the request body is larger than {limit} bytes, the most this KMS reads ({what})")))
}

/// The message for a request no route of a dialect takes (another path or method): what came,
/// escaped and cut (a path may be kilobytes), and the form the dialect's calls have.
pub(crate) fn unrouted_message(method: &axum::http::Method, uri: &axum::http::Uri, expected: &str) -> String {
    let path: String = uri.path().escape_debug().take(200).collect();
    format!("no call of this API at {method} {path}: its calls are {expected}")
}

/// A JSON answer outside any call (a request no route takes: nothing recognised, nothing audited).
pub(crate) fn unrouted_answer(status: u16, body: &serde_json::Value, content_type: &'static str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
    let mut response = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether two secrets are equal, in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
