//! The JD Cloud KMS dialect: the OpenAPI as `github.com/jdcloud-api/jdcloud-sdk-go` v1.16.0
//! (`services/kms`, revision 0.3.0) calls it — `POST /v1/key/{keyId}:Encrypt`, `:Decrypt`,
//! `GET /v1/key/{keyId}:GenerateDataKey`, `GET /v1/key/{keyId}` (DescribeKey),
//! `GET /v1/key/{keyId}:describeKeyDetail` (the versions), `PATCH …:enable` / `:disable` /
//! `:rotate`, `DELETE …:delete` (schedule deletion, `delayDays` 7–30) and
//! `PATCH /v1/key/{keyId}/version/{version}:enable` / `:disable`; a `regions/{regionId}/` prefix
//! is accepted too.
//!
//! Requests are signed `JDCLOUD2-HMAC-SHA256` as the SDK's `core/Signer.go` computes it: SigV4's
//! shape with `x-jdcloud-date` (`YYYYMMDDTHHMMSSZ`, at most [`MAX_SKEW`] from the server's
//! clock), a `x-jdcloud-nonce` (refused when replayed), the scope `DATE/REGION/SERVICE/jdcloud2_request`,
//! the key chain seeded with `JDCLOUD2` + secret key, the raw path and query as sent, and the
//! headers listed in `SignedHeaders` (`host` from the Host header, values trimmed and inner
//! spaces collapsed). Credentials are the mock's (`--access-key`/`--secret-key`, `/admin/credentials`).
//!
//! Keys are the key store's keys and key versions its version ids; `plaintext` and
//! `ciphertextBlob` are base64 (the blob is the key store's, which names key and version).
//! Answers are `{"requestId", "result"}`, errors `{"requestId", "error": {"code", "status",
//! "message"}}` with the gateway's `google.rpc` statuses (`code` is the HTTP status), and the
//! request id also in `x-jdcloud-request-id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
use super::status::Status;
use crate::api::sign::{JDCLOUD2 as ALGORITHM, JDCLOUD2_TERMINATOR as TERMINATOR, Jdcloud2Request};
use crate::api::{Action, ErrorCode, KeyMetadata, KeyState};
use crate::error::KmsError;
use crate::keystore::KeyStore;
use crate::node::Node;

/// How far `x-jdcloud-date` may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// The largest request body read.
pub const MAX_BODY: usize = 64 * 1024;
/// The header the request id is answered in.
pub const REQUEST_ID_HEADER: &str = "x-jdcloud-request-id";
/// The bytes of a data key GenerateDataKey makes (AES-256).
const DATA_KEY_BYTES: usize = 32;
const CONTENT_TYPE: &str = "application/json";
const DATE_HEADER: &str = "x-jdcloud-date";
const NONCE_HEADER: &str = "x-jdcloud-nonce";

/// An error in JD Cloud's shape, with the native code the audit log records.
struct JdError {
    status: Status,
    message: String,
    code: ErrorCode,
}

impl JdError {
    fn new(status: Status, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, ErrorCode::InvalidParameter, message)
    }

    fn unauthenticated(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(Status::Unauthenticated, code, message)
    }
}

impl From<KmsError> for JdError {
    fn from(error: KmsError) -> Self {
        let code = error.code();
        Self { status: Status::of(code), message: error.to_string(), code }
    }
}

/// The operations served, by the SDK's method names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    GenerateDataKey,
    DescribeKey,
    DescribeKeyDetail,
    EnableKey,
    DisableKey,
    KeyRotation,
    ScheduleKeyDeletion,
    EnableKeyVersion,
    DisableKeyVersion,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GenerateDataKey => "GenerateDataKey",
            Self::DescribeKey => "DescribeKey",
            Self::DescribeKeyDetail => "DescribeKeyDetail",
            Self::EnableKey => "EnableKey",
            Self::DisableKey => "DisableKey",
            Self::KeyRotation => "KeyRotation",
            Self::ScheduleKeyDeletion => "ScheduleKeyDeletion",
            Self::EnableKeyVersion => "EnableKeyVersion",
            Self::DisableKeyVersion => "DisableKeyVersion",
        }
    }

    /// The native action (faults, audit counters and access policies use it).
    fn action(self) -> Action {
        match self {
            Self::Encrypt => Action::Encrypt,
            Self::Decrypt => Action::Decrypt,
            Self::GenerateDataKey => Action::GenerateDataKey,
            Self::DescribeKey | Self::DescribeKeyDetail => Action::DescribeKey,
            Self::EnableKey | Self::EnableKeyVersion => Action::EnableKey,
            Self::DisableKey | Self::DisableKeyVersion => Action::DisableKey,
            Self::KeyRotation => Action::RotateKey,
            Self::ScheduleKeyDeletion => Action::ScheduleKeyDeletion,
        }
    }
}

/// A request's operation and the key (and version) its path names; `Err` the operation name as
/// sent when it is not one of [`Op`].
struct Route {
    op: Op,
    key_id: String,
    version: Option<String>,
}

fn route(method: &Method, raw_path: &str) -> Result<Route, String> {
    // The SDK escapes the path (`key/K%3AEncrypt`); the signature is over the raw path.
    let path = super::sign::percent_decode_path(raw_path).unwrap_or_else(|| raw_path.to_owned());
    let rest = path.strip_prefix("/v1/").unwrap_or(&path);
    let rest = match rest.strip_prefix("regions/") {
        Some(after) => after.split_once('/').map_or("", |(_, r)| r),
        None => rest,
    };
    let Some(rest) = rest.strip_prefix("key/") else {
        return Err(format!("{method} {path}"));
    };
    let (resource, verb) = match rest.rsplit_once(':') {
        Some((resource, verb)) => (resource, Some(verb)),
        None => (rest, None),
    };
    let (key, version) = match resource.split_once("/version/") {
        Some((key, version)) => (key, Some(version)),
        None => (resource, None),
    };
    let op = match (method.as_str(), version.is_some(), verb) {
        ("POST", false, Some("Encrypt")) => Op::Encrypt,
        ("POST", false, Some("Decrypt")) => Op::Decrypt,
        ("GET", false, Some("GenerateDataKey")) => Op::GenerateDataKey,
        ("GET", false, None) => Op::DescribeKey,
        ("GET", false, Some("describeKeyDetail")) => Op::DescribeKeyDetail,
        ("PATCH", false, Some("enable")) => Op::EnableKey,
        ("PATCH", false, Some("disable")) => Op::DisableKey,
        ("PATCH", false, Some("rotate")) => Op::KeyRotation,
        ("DELETE", false, Some("delete")) => Op::ScheduleKeyDeletion,
        ("PATCH", true, Some("enable")) => Op::EnableKeyVersion,
        ("PATCH", true, Some("disable")) => Op::DisableKeyVersion,
        (_, _, Some(verb)) => return Err(verb.chars().take(64).collect()),
        _ => return Err(format!("{method} {path}")),
    };
    Ok(Route { op, key_id: key.to_owned(), version: version.map(str::to_owned) })
}

/// Any method under `/v1/`: one JD Cloud KMS call.
pub(crate) async fn call(State(node): State<Arc<Node>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let route = route(&method, uri.path());
    let (operation, action) = match &route {
        Ok(route) => (route.op.name().to_owned(), Some(route.op.action())),
        Err(name) => (name.clone(), None),
    };
    let mut call = Call::new(&node, Dialect::Jdcloud, &operation, action);
    call.set_caller(&headers);
    let result = run(&mut call, route, &method, &uri, &headers, body).await;
    let request_id = call.request_id.clone();
    match result {
        Ok(result) => call.answer(200, None, &json!({"requestId": request_id, "result": result}), CONTENT_TYPE, REQUEST_ID_HEADER),
        Err(error) => {
            let status = error.status.http();
            let body = json!({"requestId": request_id, "error": {"code": status, "status": error.status.name(), "message": error.message}});
            call.answer(status, Some(error.code), &body, CONTENT_TYPE, REQUEST_ID_HEADER)
        }
    }
}

async fn run(
    call: &mut Call,
    route: Result<Route, String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, JdError> {
    let body = read_body(body, MAX_BODY, "JD Cloud KMS takes at most 6144 bytes of plaintext").await?;
    let store = call.enter().await?;
    let access_key = verify(call, method, uri, headers, &body)?;
    let operation = route.as_ref().map_or_else(|name| name.clone(), |r| r.op.name().to_owned());
    call.admit(&operation)?;
    let route = route.map_err(|name| {
        JdError::new(
            Status::NotFound,
            ErrorCode::InvalidParameter,
            format!("no such JD Cloud KMS API `{name}` (this mock serves {})", served()),
        )
    })?;
    call.set_key(&route.key_id, route.version.as_deref());
    call.authorize(&access_key, Some(&route.key_id))?;
    let request: Request = if body.is_empty() {
        Request::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| JdError::invalid(format!("the body is not the JSON of this API: {}", crate::persist::json_problem(&e))))?
    };
    let query = uri.query().and_then(super::sign::parse_form).unwrap_or_default();
    let mut ops = Ops { call, store: &store };
    ops.run(&route, &request, &query).await
}

fn served() -> &'static str {
    "Encrypt, Decrypt, GenerateDataKey, DescribeKey, describeKeyDetail, enable, disable, rotate, delete and version enable/disable"
}

/// Verifies `JDCLOUD2-HMAC-SHA256`; returns the access key.
fn verify(call: &mut Call, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<String, JdError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let missing = |name: &str| {
        JdError::unauthenticated(ErrorCode::InvalidParameter, format!("the request lacks the `{name}` header: sign it with {ALGORITHM}"))
    };
    let authorization = header("authorization").ok_or_else(|| missing("Authorization"))?;
    let Authorization { credential, signed_headers, signature } = parse_authorization(authorization, ALGORITHM).map_err(|problem| {
        let message = match problem {
            AuthorizationProblem::Algorithm => format!("the Authorization header is not a {ALGORITHM} signature"),
            other => other.to_string(),
        };
        JdError::unauthenticated(ErrorCode::SignatureDoesNotMatch, message)
    })?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, TERMINATOR] = scope[..] else {
        return Err(JdError::unauthenticated(
            ErrorCode::SignatureDoesNotMatch,
            format!("the Credential is not AK/DATE/REGION/SERVICE/{TERMINATOR}"),
        ));
    };
    call.set_access_key(Some(access_key));
    let secret = call.node.shared.auth.secret(access_key).ok_or_else(|| {
        JdError::unauthenticated(ErrorCode::InvalidAccessKeyId, KmsError::InvalidAccessKeyId(access_key.to_owned()).to_string())
    })?;
    let timestamp = header(DATE_HEADER).ok_or_else(|| missing(DATE_HEADER))?;
    let time = parse_compact_time(timestamp)
        .ok_or_else(|| JdError::unauthenticated(ErrorCode::InvalidParameter, format!("`{DATE_HEADER}` is not YYYYMMDDTHHMMSSZ")))?;
    if let Some(skew) = skew_beyond(time, MAX_SKEW) {
        return Err(JdError::unauthenticated(
            ErrorCode::RequestTimeTooSkewed,
            format!(
                "`{DATE_HEADER}` {timestamp} is {} s away from the server's clock (limit {} s): sync the client's clock",
                skew.as_secs(),
                MAX_SKEW.as_secs()
            ),
        ));
    }
    let nonce = header(NONCE_HEADER).filter(|n| !n.is_empty()).ok_or_else(|| missing(NONCE_HEADER))?;

    let mut canonical_headers = Vec::new();
    for name in signed_headers.split(';') {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if values.is_empty() {
            return Err(missing(name));
        }
        canonical_headers.push((name, collapse_spaces(&values.join(","))));
    }
    let request = Jdcloud2Request {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &canonical_headers,
        body,
        timestamp,
        region,
        service,
    };
    let expected = request.signature(secret.as_str());
    if !timestamp.starts_with(date) || !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(JdError::unauthenticated(
            ErrorCode::SignatureDoesNotMatch,
            KmsError::SignatureDoesNotMatch(access_key.to_owned()).to_string(),
        ));
    }
    call.node.shared.auth.remember_nonce(access_key, nonce, crate::auth::now_ms(), MAX_SKEW.as_millis() as u64).map_err(|e| {
        let code = e.code();
        JdError::unauthenticated(code, e.to_string())
    })?;
    Ok(access_key.to_owned())
}

/// A header value as the SDK's `stripExcessSpaces` leaves it: trimmed, runs of spaces as one.
fn collapse_spaces(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, word) in value.trim_matches(' ').split(' ').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The JSON body fields any operation takes.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Request {
    plaintext: Option<String>,
    ciphertext_blob: Option<String>,
}

struct Ops<'a> {
    call: &'a mut Call,
    store: &'a Arc<KeyStore>,
}

/// JD Cloud's key status numbers: 0 enabled, 1 disabled, 2 pending deletion.
fn status_number(state: KeyState) -> u8 {
    match state {
        KeyState::Enabled => 0,
        KeyState::Disabled => 1,
        KeyState::PendingDeletion => 2,
    }
}

impl Ops<'_> {
    fn describe(&self, key_id: &str) -> Result<KeyMetadata, JdError> {
        Ok(self.call.shown(self.store.describe(key_id)?))
    }

    async fn commit(&self) -> Result<(), JdError> {
        Ok(self.call.node.commit().await?)
    }

    async fn run(&mut self, route: &Route, request: &Request, query: &[(String, String)]) -> Result<Value, JdError> {
        let key_id = route.key_id.as_str();
        match route.op {
            Op::Encrypt => {
                let plaintext = decode("plaintext", request.plaintext.as_deref())?;
                let (_, blob) = self.call.encrypt(self.store, key_id, &plaintext, &BTreeMap::new())?;
                Ok(json!({"ciphertextBlob": B64.encode(blob)}))
            }
            Op::Decrypt => {
                let blob = decode("ciphertextBlob", request.ciphertext_blob.as_deref())?;
                let opened = self.call.decrypt(self.store, &blob, &BTreeMap::new())?;
                if opened.key_id != key_id {
                    return Err(JdError::invalid(format!(
                        "the ciphertextBlob was made by key `{}`, not by `{key_id}` the path names",
                        opened.key_id
                    )));
                }
                Ok(json!({"plaintext": B64.encode(&*opened.plaintext)}))
            }
            Op::GenerateDataKey => {
                let data_key = crate::crypto::random_bytes(DATA_KEY_BYTES);
                let (_, blob) = self.call.encrypt(self.store, key_id, &data_key, &BTreeMap::new())?;
                Ok(json!({"plaintext": B64.encode(&*data_key), "ciphertextBlob": B64.encode(blob)}))
            }
            Op::DescribeKey => {
                let metadata = self.describe(key_id)?;
                Ok(json!({"keyInfo": {
                    "keyId": metadata.key_id,
                    "keyName": metadata.key_id,
                    "keyStatus": status_number(metadata.key_state),
                    "createTime": metadata.creation_date,
                    "keyDesc": "",
                    "rotationCycle": 0,
                    "deleteTime": "",
                }}))
            }
            Op::DescribeKeyDetail => {
                let metadata = self.describe(key_id)?;
                let versions: Vec<Value> = metadata
                    .key_version_ids
                    .iter()
                    .map(|version| {
                        let state = if metadata.key_state == KeyState::Enabled && metadata.disabled_key_version_ids.contains(version) {
                            KeyState::Disabled
                        } else {
                            metadata.key_state
                        };
                        json!({"keyVersion": version, "createTime": metadata.creation_date, "keyStatus": status_number(state), "deleteTime": ""})
                    })
                    .collect();
                Ok(json!({"keyDetail": {
                    "keyId": metadata.key_id,
                    "keyName": metadata.key_id,
                    "rotationCycle": 0,
                    "keyVersionCount": versions.len(),
                    "keyVersionList": versions,
                }}))
            }
            Op::EnableKey | Op::DisableKey => {
                let target = if route.op == Op::EnableKey { KeyState::Enabled } else { KeyState::Disabled };
                self.store.set_state(key_id, target)?;
                self.commit().await?;
                Ok(json!({}))
            }
            Op::KeyRotation => {
                self.call.check_fault_disabled(key_id, None)?;
                let metadata = self.store.rotate(key_id)?;
                self.call.set_key(key_id, Some(&metadata.current_key_version_id));
                self.commit().await?;
                Ok(json!({}))
            }
            Op::ScheduleKeyDeletion => {
                let days = match query.iter().find(|(k, _)| k == "delayDays") {
                    None => 7,
                    Some((_, days)) => days.parse::<u32>().map_err(|_| JdError::invalid(format!("delayDays `{days}` is not a number")))?,
                };
                if !(7..=30).contains(&days) {
                    return Err(JdError::invalid(format!("delayDays is {days}; it must be 7 to 30")));
                }
                self.store.set_state(key_id, KeyState::PendingDeletion)?;
                self.commit().await?;
                Ok(json!({}))
            }
            Op::EnableKeyVersion | Op::DisableKeyVersion => {
                let version = route.version.as_deref().unwrap_or_default();
                self.store.set_version_enabled(key_id, version, route.op == Op::EnableKeyVersion)?;
                self.commit().await?;
                Ok(json!({}))
            }
        }
    }
}

fn decode(field: &str, value: Option<&str>) -> Result<zeroize::Zeroizing<Vec<u8>>, JdError> {
    let value = value.filter(|v| !v.is_empty()).ok_or_else(|| JdError::invalid(format!("{field} is required")))?;
    B64.decode(value).map(zeroize::Zeroizing::new).map_err(|_| JdError::invalid(format!("{field} is not valid base64")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_operations() {
        let post = Method::POST;
        let r = route(&post, "/v1/key/lab-key:Encrypt").unwrap();
        assert_eq!((r.op, r.key_id.as_str()), (Op::Encrypt, "lab-key"));
        // As jdcloud-sdk-go sends it.
        assert_eq!(route(&post, "/v1/key/lab-key%3ADecrypt").unwrap().op, Op::Decrypt);
        let r = route(&Method::PATCH, "/v1/regions/cn-north-1/key/k/version/v2:disable").unwrap();
        assert_eq!((r.op, r.key_id.as_str(), r.version.as_deref()), (Op::DisableKeyVersion, "k", Some("v2")));
        assert_eq!(route(&Method::GET, "/v1/key/k").unwrap().op, Op::DescribeKey);
        assert_eq!(route(&post, "/v1/key/k:Frobnicate").err().as_deref(), Some("Frobnicate"));
        assert_eq!(collapse_spaces("  a   b c "), "a b c");
    }
}
