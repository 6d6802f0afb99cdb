//! The one signed client of the mock KMS: what the reference plugin's remote KEK and the secret
//! sync controller's store call it with. One call is one signed HTTP request: the caller decides
//! about retries, failover and what a failure means to it. [`Client::call`] is any action of the
//! native API; [`Client::encrypt`] and [`Client::decrypt`] wrap and unwrap in the native, JD Cloud
//! (`JDCLOUD2-HMAC-SHA256`) or Alibaba Cloud (RPC signature v1) dialect, signed as those clouds'
//! SDKs sign ([`super::sign`]), their error answers read back as native [`ErrorCode`]s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::sign::{JDCLOUD2, Jdcloud2Request, aliyun_v1_signature, percent_encode};
use super::status::{Status, aliyun_code};
use super::{
    Action, Caller, Credential, DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, ErrorBody, ErrorCode, HEADER_CALLER,
    auth_headers, retry_after,
};
use crate::dialects::Dialect;

/// The region a JD Cloud request names in its signature scope and path (the seed's plugin config
/// names none; the mock takes any).
pub const JDCLOUD_REGION: &str = "cn-north-1";
/// The region an Alibaba Cloud request names (`RegionId`; the mock takes any).
pub const ALIYUN_REGION: &str = "cn-hangzhou";
/// The Alibaba Cloud KMS API version requested.
pub const ALIYUN_VERSION: &str = "2016-01-20";

/// A client holding one credential; it signs every request with it. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    credential: Credential,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("access_key", &self.credential.access_key).finish_non_exhaustive()
    }
}

/// Why one call got no usable answer. Nothing here holds a secret or a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer within the call's timeout.
    Timeout,
    /// The request did not reach the KMS (`connect`: the connection itself was refused or failed).
    Unreachable {
        /// Whether connecting failed (else the request failed after connecting).
        connect: bool,
    },
    /// The connection closed before the whole answer arrived.
    Truncated,
    /// A success status with a body that is not the expected JSON (serde's description).
    Malformed(String),
    /// An error status without the API's error body.
    Status {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The wait a `Retry-After` header asked for.
        retry_after: Option<Duration>,
    },
    /// The client does not speak this dialect.
    Unsupported(Dialect),
    /// The KMS refused the request with an error body (a dialect's error read as the native code).
    Refused {
        /// What it answered.
        error: ErrorBody,
        /// The wait a `Retry-After` header asked for.
        retry_after: Option<Duration>,
    },
}

impl Client {
    /// A client sending through `http` (its pool and TLS settings), signing with `credential`.
    pub fn new(http: reqwest::Client, credential: Credential) -> Self {
        Self { http, credential }
    }

    /// The access key requests are signed with.
    pub fn access_key(&self) -> &str {
        &self.credential.access_key
    }

    /// `builder` also trusting the PEM certificates in `ca_file` (a private CA, e.g. the lab's;
    /// the built-in roots stay trusted). The error names the file and what is wrong with it.
    pub fn trusting(builder: reqwest::ClientBuilder, ca_file: &std::path::Path) -> Result<reqwest::ClientBuilder, String> {
        let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read the CA file {} ({e})", ca_file.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} holds no PEM certificate ({e}): point it at a CA bundle", ca_file.display()))?;
        if certificates.is_empty() {
            return Err(format!("the CA file {} holds no PEM certificate: point it at a CA bundle", ca_file.display()));
        }
        Ok(certificates.into_iter().fold(builder, reqwest::ClientBuilder::add_root_certificate))
    }

    /// Wraps `plaintext` (base64) under `key_id`'s current version, in `dialect` (native,
    /// jdcloud or aliyun; another dialect is refused as [`CallError::Unsupported`]).
    pub async fn encrypt(
        &self,
        dialect: Dialect,
        endpoint: &str,
        key_id: &str,
        plaintext: &str,
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<Encrypted, CallError> {
        match dialect {
            Dialect::Native => {
                let request = EncryptRequest { key_id: key_id.to_owned(), plaintext: plaintext.to_owned(), ..Default::default() };
                let body = serde_json::to_vec(&request).map_err(|e| CallError::Malformed(e.to_string()))?;
                let response: EncryptResponse = self.call(endpoint, Action::Encrypt, &body, timeout, caller).await?;
                Ok(Encrypted {
                    ciphertext_blob: response.ciphertext_blob,
                    key_id: response.key_id,
                    key_version_id: Some(response.key_version_id),
                })
            }
            Dialect::Jdcloud => {
                let body = serde_json::json!({"plaintext": plaintext}).to_string();
                let result: JdEncrypted = self.jdcloud(endpoint, key_id, "Encrypt", body.as_bytes(), timeout, caller).await?;
                Ok(Encrypted { ciphertext_blob: result.ciphertext_blob, key_id: key_id.to_owned(), key_version_id: None })
            }
            Dialect::Aliyun => {
                let response: AliyunSealed =
                    self.aliyun(endpoint, "Encrypt", &[("KeyId", key_id), ("Plaintext", plaintext)], timeout, caller).await?;
                let blob = response.ciphertext_blob.ok_or_else(|| CallError::Malformed("the answer has no CiphertextBlob".into()))?;
                Ok(Encrypted { ciphertext_blob: blob, key_id: response.key_id, key_version_id: Some(response.key_version_id) })
            }
            other => Err(CallError::Unsupported(other)),
        }
    }

    /// Unwraps `ciphertext_blob` (base64, as [`Client::encrypt`] returned it) made by `key_id`;
    /// the plaintext comes back in base64.
    pub async fn decrypt(
        &self,
        dialect: Dialect,
        endpoint: &str,
        key_id: &str,
        ciphertext_blob: &str,
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<Decrypted, CallError> {
        match dialect {
            Dialect::Native => {
                let request = DecryptRequest { ciphertext_blob: ciphertext_blob.to_owned(), ..Default::default() };
                let body = serde_json::to_vec(&request).map_err(|e| CallError::Malformed(e.to_string()))?;
                let response: DecryptResponse = self.call(endpoint, Action::Decrypt, &body, timeout, caller).await?;
                Ok(Decrypted {
                    plaintext: Zeroizing::new(response.plaintext.clone()),
                    key_id: response.key_id.clone(),
                    key_version_id: Some(response.key_version_id.clone()),
                })
            }
            Dialect::Jdcloud => {
                let body = serde_json::json!({"ciphertextBlob": ciphertext_blob}).to_string();
                let result: JdDecrypted = self.jdcloud(endpoint, key_id, "Decrypt", body.as_bytes(), timeout, caller).await?;
                Ok(Decrypted { plaintext: result.plaintext, key_id: key_id.to_owned(), key_version_id: None })
            }
            Dialect::Aliyun => {
                let response: AliyunSealed =
                    self.aliyun(endpoint, "Decrypt", &[("CiphertextBlob", ciphertext_blob)], timeout, caller).await?;
                let plaintext = response.plaintext.ok_or_else(|| CallError::Malformed("the answer has no Plaintext".into()))?;
                Ok(Decrypted { plaintext, key_id: response.key_id, key_version_id: Some(response.key_version_id) })
            }
            other => Err(CallError::Unsupported(other)),
        }
    }

    /// One JD Cloud KMS call `POST /v1/regions/REGION/key/KEY:OPERATION`, signed
    /// `JDCLOUD2-HMAC-SHA256` with the headers jdcloud-sdk-go signs.
    async fn jdcloud<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        key_id: &str,
        operation: &str,
        body: &[u8],
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<T, CallError> {
        let path = format!("/v1/regions/{JDCLOUD_REGION}/key/{}:{operation}", percent_encode(key_id));
        let url = reqwest::Url::parse(&format!("{endpoint}{path}")).map_err(|_| CallError::Unreachable { connect: true })?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let timestamp: String = now_rfc3339().chars().filter(|c| *c != '-' && *c != ':').collect();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("host", host),
            ("x-jdcloud-date", timestamp.clone()),
            ("x-jdcloud-nonce", nonce),
        ];
        let request = Jdcloud2Request {
            method: "POST",
            path: url.path(),
            query: "",
            headers: &headers,
            body,
            timestamp: &timestamp,
            region: JDCLOUD_REGION,
            service: "kms",
        };
        let authorization = format!(
            "{JDCLOUD2} Credential={}/{}, SignedHeaders={}, Signature={}",
            self.credential.access_key,
            request.scope(),
            request.signed_headers(),
            request.signature(&self.credential.secret_key)
        );
        let mut builder = self.http.post(url.clone()).header(reqwest::header::AUTHORIZATION, authorization);
        for (name, value) in &headers[..] {
            if *name != "host" {
                builder = builder.header(*name, value);
            }
        }
        let (status, retry_after, bytes) = self.send(builder.body(body.to_vec()), timeout, caller).await?;
        if status.is_success() {
            let answer: JdAnswer<T> = serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed(e.to_string()))?;
            return Ok(answer.result);
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct JdFailure {
            #[serde(default)]
            request_id: String,
            error: JdError,
        }
        #[derive(Deserialize)]
        struct JdError {
            status: String,
            #[serde(default)]
            message: String,
        }
        match serde_json::from_slice::<JdFailure>(&bytes) {
            Ok(failure) => {
                let code = Status::from_name(&failure.error.status).map_or_else(|| by_http_status(status), Status::code);
                let error = ErrorBody { code, message: failure.error.message, request_id: failure.request_id };
                Err(CallError::Refused { error, retry_after })
            }
            Err(_) => Err(CallError::Status { status, retry_after }),
        }
    }

    /// One Alibaba Cloud KMS RPC call `POST /` of `Action=OPERATION` and `params`, form-encoded
    /// and signed with signature v1 as alibaba-cloud-sdk-go signs.
    async fn aliyun<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        operation: &str,
        params: &[(&str, &str)],
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<T, CallError> {
        let timestamp = now_rfc3339();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut all: Vec<(&str, &str)> = vec![
            ("Action", operation),
            ("Version", ALIYUN_VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", &self.credential.access_key),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", &nonce),
            ("Timestamp", &timestamp),
            ("RegionId", ALIYUN_REGION),
        ];
        all.extend_from_slice(params);
        let signature = aliyun_v1_signature(&self.credential.secret_key, "POST", all.iter().copied());
        all.push(("Signature", &signature));
        let form =
            Zeroizing::new(all.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&"));
        let builder = self
            .http
            .post(format!("{endpoint}/"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.as_bytes().to_vec());
        let (status, retry_after, bytes) = self.send(builder, timeout, caller).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed(e.to_string()));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct AliyunFailure {
            code: String,
            #[serde(default)]
            message: String,
            #[serde(default)]
            request_id: String,
        }
        match serde_json::from_slice::<AliyunFailure>(&bytes) {
            Ok(failure) => {
                let code = aliyun_code(&failure.code, status.as_u16());
                let message = format!("{}: {}", failure.code, failure.message);
                Err(CallError::Refused { error: ErrorBody { code, message, request_id: failure.request_id }, retry_after })
            }
            Err(_) => Err(CallError::Status { status, retry_after }),
        }
    }

    /// Sends a built request within `timeout`: the status, the `Retry-After` wait and the body.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<(reqwest::StatusCode, Option<Duration>, bytes::Bytes), CallError> {
        let builder = match caller {
            Some(caller) => builder.header(HEADER_CALLER, caller.name()),
            None => builder,
        };
        let response = builder
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { CallError::Timeout } else { CallError::Unreachable { connect: e.is_connect() } })?;
        let status = response.status();
        let retry_after = retry_after(response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()));
        let bytes = response.bytes().await.map_err(|_| CallError::Truncated)?;
        Ok((status, retry_after, bytes))
    }

    /// One signed `POST /v1/<action>` of `body` (the request's JSON) to `endpoint`
    /// (`http://host:port`), answered within `timeout`; `caller` is sent as [`HEADER_CALLER`].
    pub async fn call<Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        action: Action,
        body: &[u8],
        timeout: Duration,
        caller: Option<Caller>,
    ) -> Result<Resp, CallError> {
        let path = action.path();
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut builder = self.http.post(format!("{endpoint}{path}"));
        for (name, value) in
            auth_headers(&self.credential.access_key, self.credential.secret_key.as_bytes(), &path, body, timestamp, &nonce)
        {
            builder = builder.header(name, value);
        }
        let builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_vec());
        let (status, retry_after, bytes) = self.send(builder, timeout, caller).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(error) => Err(CallError::Refused { error, retry_after }),
            Err(_) => Err(CallError::Status { status, retry_after }),
        }
    }
}

/// A wrapped key as a dialect answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The ciphertext blob, base64.
    pub ciphertext_blob: String,
    /// The key that wrapped it.
    pub key_id: String,
    /// The key version that wrapped it, where the dialect says (JD Cloud does not).
    pub key_version_id: Option<String>,
}

/// An unwrapped key as a dialect answered it. `Debug` never shows the plaintext.
pub struct Decrypted {
    /// The plaintext, base64.
    pub plaintext: Zeroizing<String>,
    /// The key that had wrapped it.
    pub key_id: String,
    /// The key version that had wrapped it, where the dialect says (JD Cloud does not).
    pub key_version_id: Option<String>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted").field("key_id", &self.key_id).field("key_version_id", &self.key_version_id).finish_non_exhaustive()
    }
}

/// `{"requestId", "result"}`: a JD Cloud answer.
#[derive(Deserialize)]
struct JdAnswer<T> {
    result: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JdEncrypted {
    ciphertext_blob: String,
}

#[derive(Deserialize)]
struct JdDecrypted {
    plaintext: Zeroizing<String>,
}

/// Alibaba Cloud's Encrypt and Decrypt answers.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliyunSealed {
    key_id: String,
    key_version_id: String,
    ciphertext_blob: Option<String>,
    plaintext: Option<Zeroizing<String>>,
}

/// The native code of an error status without a body the dialect defines.
fn by_http_status(status: reqwest::StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::SignatureDoesNotMatch,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::KeyNotFound,
        429 => ErrorCode::Throttling,
        500 => ErrorCode::InternalFailure,
        code if code >= 500 => ErrorCode::ServiceUnavailable,
        _ => ErrorCode::InvalidParameter,
    }
}

/// Now as `2026-01-02T03:04:05Z`.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
