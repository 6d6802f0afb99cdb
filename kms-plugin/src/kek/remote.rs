//! A KEK held in a remote KMS (kms-lab's mock KMS, a cloud-style HTTP/JSON API): signed
//! requests, a deadline per operation, bounded retries with backoff and jitter on retryable
//! failures only, failover across endpoints, and `Retry-After` honoured.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use mock_kms::api::{Action, CallError, Client, ErrorBody, ErrorCode};
use rand::Rng;
use zeroize::Zeroizing;

use super::{Claimed, KekError, Wrapped};
use crate::config::RemoteKmsConfig;

/// The largest plaintext the mock KMS encrypts (named when a request is refused as too large).
const MAX_PLAINTEXT: usize = 6 * 1024;
/// The first retry's backoff; each further retry doubles it (full jitter).
const BASE_BACKOFF: Duration = Duration::from_millis(50);
/// The longest single backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A remote KMS key as the plugin's KEK.
pub struct RemoteKek {
    config: RemoteKmsConfig,
    client: Client,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for RemoteKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKek").field("endpoints", &self.config.endpoints).field("key_id", &self.config.key_id).finish_non_exhaustive()
    }
}

/// One failed attempt: whether another may help, and how long the KMS asked to wait.
struct Attempt {
    error: KekError,
    retryable: bool,
    retry_after: Option<Duration>,
    switch_endpoint: bool,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The v2 key id the plugin reports for a key version: `<key>/<version>`.
pub fn key_id_of(key: &str, version: &str) -> String {
    format!("{key}/{version}")
}

impl RemoteKek {
    /// A client for the KMS `config` names.
    pub fn new(config: RemoteKmsConfig) -> Result<Self, KekError> {
        let mut builder = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(30));
        if let Some(ca_file) = &config.ca_file {
            builder = Client::trusting(builder, ca_file).map_err(|e| KekError::Internal(format!("{e} (SSL_CERT_FILE)")))?;
        }
        let http = builder.build().map_err(|e| KekError::Internal(format!("cannot build the HTTP client: {e}")))?;
        let client = Client::new(http, config.credential.clone());
        Ok(Self { config, client, preferred: AtomicUsize::new(0) })
    }

    /// Wraps `plaintext` with the key's current version.
    pub async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, KekError> {
        let (dialect, key_id, plaintext) = (self.config.dialect, &self.config.key_id, b64().encode(plaintext));
        let caller = super::current_caller();
        let response = self
            .call(Action::Encrypt, |endpoint, timeout| self.client.encrypt(dialect, endpoint, key_id, &plaintext, timeout, caller))
            .await?;
        let ciphertext = b64()
            .decode(&response.ciphertext_blob)
            .map_err(|_| KekError::Internal("the KMS returned a CiphertextBlob that is not base64".into()))?;
        Ok(Wrapped {
            ciphertext: ciphertext.into(),
            key_id: reported_key_id(&response.key_id, response.key_version_id.as_deref()),
            annotations: Default::default(),
        })
    }

    /// Unwraps what [`RemoteKek::wrap`] returned; a claimed key id must match the blob's key version.
    pub async fn unwrap(&self, ciphertext: &[u8], claimed: Claimed<'_>) -> Result<Zeroizing<Vec<u8>>, KekError> {
        if ciphertext.is_empty() {
            return Err(KekError::InvalidCiphertext("it is empty".into()));
        }
        if let Some(annotations) = claimed.annotations.filter(|a| !a.is_empty()) {
            return Err(KekError::Mismatch(format!(
                "annotations {:?} were sent, but this plugin returns none with a remote KEK",
                annotations.keys().collect::<Vec<_>>()
            )));
        }
        let (dialect, key_id, blob) = (self.config.dialect, &self.config.key_id, b64().encode(ciphertext));
        let caller = super::current_caller();
        let response =
            self.call(Action::Decrypt, |endpoint, timeout| self.client.decrypt(dialect, endpoint, key_id, &blob, timeout, caller)).await?;
        let actual = reported_key_id(&response.key_id, response.key_version_id.as_deref());
        let plaintext = Zeroizing::new(
            b64().decode(&*response.plaintext).map_err(|_| KekError::Internal("the KMS returned a Plaintext that is not base64".into()))?,
        );
        if let Some(key_id) = claimed.key_id.filter(|id| !id.is_empty())
            && key_id != actual
        {
            return Err(KekError::Mismatch(format!("key_id `{key_id}` does not match the ciphertext's key version `{actual}`")));
        }
        Ok(plaintext)
    }

    /// Calls `action` (one attempt: `send(endpoint, timeout)`) with retries and failover, all
    /// within the configured deadline.
    async fn call<'a, T, F, Fut>(&'a self, action: Action, send: F) -> Result<T, KekError>
    where
        F: Fn(&'a str, Duration) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let deadline = Instant::now() + self.config.call_timeout;
        let endpoints = self.config.endpoints.len().max(1);
        let mut endpoint = self.preferred.load(Ordering::Relaxed) % endpoints;
        let mut attempt = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(KekError::Timeout(self.config.call_timeout));
            }
            let url = &self.config.endpoints[endpoint];
            match send(url, remaining).await {
                Ok(response) => {
                    self.preferred.store(endpoint, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => {
                    let failed = self.failed(url, action, error);
                    tracing::debug!(action = %action, endpoint = %url, attempt, error = %failed.error, "KMS call failed");
                    if !failed.retryable || attempt >= self.config.max_retries {
                        return Err(failed.error);
                    }
                    attempt += 1;
                    if failed.switch_endpoint {
                        endpoint = (endpoint + 1) % endpoints;
                    }
                    let backoff = failed.retry_after.unwrap_or_else(|| {
                        let cap = BASE_BACKOFF.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
                        rand::thread_rng().gen_range(Duration::ZERO..=cap)
                    });
                    if Instant::now() + backoff >= deadline {
                        // Waiting would pass the deadline: report the failure now rather than hang.
                        return Err(failed.error);
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// What one failed attempt at `endpoint` means: the error, and whether to retry (where).
    fn failed(&self, endpoint: &str, action: Action, error: CallError) -> Attempt {
        let outage = |error| Attempt { error, retryable: true, retry_after: None, switch_endpoint: true };
        match error {
            CallError::Timeout => outage(KekError::Timeout(self.config.call_timeout)),
            CallError::Unreachable { connect: true } => outage(KekError::Unavailable(format!("cannot connect to {endpoint}"))),
            CallError::Unreachable { connect: false } => outage(KekError::Unavailable(format!("request to {endpoint} failed"))),
            CallError::Truncated => outage(KekError::Unavailable(format!("{endpoint} closed the connection mid-response"))),
            CallError::Malformed(_) => Attempt {
                error: KekError::Internal(format!("{endpoint} answered {action} with a body that is not the expected JSON")),
                retryable: false,
                retry_after: None,
                switch_endpoint: false,
            },
            CallError::Unsupported(dialect) => Attempt {
                error: KekError::Internal(format!("the plugin cannot call a KMS in the `{dialect}` dialect")),
                retryable: false,
                retry_after: None,
                switch_endpoint: false,
            },
            CallError::Status { status, retry_after } => {
                let retryable = status.is_server_error() || status.as_u16() == 429;
                let problem = format!("{endpoint} answered HTTP {status} without an error body");
                let error = match status.as_u16() {
                    // The request itself was refused: a client error, not an outage.
                    413 => KekError::Mismatch(format!(
                        "the KMS refused the {action} request as too large ({problem}): send a smaller plaintext (the mock KMS takes at most {} bytes)",
                        MAX_PLAINTEXT
                    )),
                    code if (400..500).contains(&code) && code != 429 => KekError::Internal(problem),
                    _ => KekError::Unavailable(problem),
                };
                Attempt { error, retryable, retry_after, switch_endpoint: retryable }
            }
            CallError::Refused { error, retry_after } => Attempt {
                error: map_error(action, &error),
                retryable: error.code.retryable(),
                retry_after,
                switch_endpoint: error.code != ErrorCode::Throttling,
            },
        }
    }
}

/// The key id the plugin reports: `<key>/<version>` where the KMS names the version
/// ([`key_id_of`]), else the key alone (JD Cloud's answers name no version).
fn reported_key_id(key: &str, version: Option<&str>) -> String {
    version.map_or_else(|| key.to_owned(), |version| key_id_of(key, version))
}

/// What a KMS error means for the apiserver, with the KMS's own code and request id.
fn map_error(action: Action, error: &ErrorBody) -> KekError {
    let detail = format!("{:?}: {} (request {})", error.code, error.message, error.request_id);
    match error.code {
        ErrorCode::InvalidAccessKeyId => KekError::Unauthenticated(format!("{detail}; check AccessKey in the plugin config")),
        ErrorCode::SignatureDoesNotMatch => KekError::Unauthenticated(format!("{detail}; check SecretKey in the plugin config")),
        ErrorCode::RequestTimeTooSkewed => KekError::Unauthenticated(format!("{detail}; check this host's clock")),
        ErrorCode::RequestReplayed => KekError::Unauthenticated(detail),
        ErrorCode::Forbidden => KekError::PermissionDenied(detail),
        // A blob that names no existing key was altered or made elsewhere.
        ErrorCode::KeyNotFound if action == Action::Decrypt => KekError::InvalidCiphertext(detail),
        ErrorCode::KeyNotFound => KekError::KeyUnusable(format!("{detail}; check KmsKeyId")),
        ErrorCode::KeyNotEnabled => KekError::KeyUnusable(detail),
        ErrorCode::InvalidCiphertext => KekError::InvalidCiphertext(detail),
        // The KMS refused the request as invalid (e.g. a plaintext over its limit; the message
        // names the limit): the caller's argument, reported as InvalidArgument.
        ErrorCode::InvalidParameter if matches!(action, Action::Encrypt | Action::Decrypt) => {
            KekError::Mismatch(format!("the KMS refused the {action} request as invalid: {detail}"))
        }
        ErrorCode::InvalidParameter | ErrorCode::KeyAlreadyExists => KekError::Internal(detail),
        ErrorCode::Throttling => KekError::Throttled(detail),
        ErrorCode::Sealed => KekError::Unavailable(format!("{detail}; the KMS must be unsealed")),
        ErrorCode::InternalFailure | ErrorCode::ServiceUnavailable => KekError::Unavailable(detail),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::config::Credential;

    async fn kek_answering(template: ResponseTemplate) -> (MockServer, RemoteKek) {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(template).mount(&server).await;
        let config = RemoteKmsConfig {
            endpoints: vec![server.uri()],
            key_id: "lab-key".into(),
            dialect: mock_kms::dialects::Dialect::Native,
            ca_file: None,
            credential: Credential::new("AK", "SK"),
            call_timeout: Duration::from_secs(5),
            max_retries: 2,
        };
        (server, RemoteKek::new(config).unwrap())
    }

    #[tokio::test]
    async fn a_plaintext_over_the_kms_limit_is_invalid_argument_naming_the_limit() {
        // What the mock KMS answers for a 64 KiB Encrypt (mock-kms/tests/dialects.rs checks that side).
        let body = serde_json::json!({
            "Code": "InvalidParameter",
            "Message": "the request body is larger than 65536 bytes, the most this KMS reads (a Plaintext may be at most 6144 bytes)",
            "RequestId": "r-1",
        });
        let (_server, kek) = kek_answering(ResponseTemplate::new(400).set_body_json(body)).await;
        let error = kek.wrap(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
        assert!(error.to_string().contains("6144") && error.to_string().contains("InvalidParameter"), "{error}");
    }

    #[tokio::test]
    async fn a_bare_413_is_a_client_error_not_an_outage() {
        let (server, kek) = kek_answering(ResponseTemplate::new(413)).await;
        let error = kek.wrap(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
        assert!(error.to_string().contains("too large") && error.to_string().contains("6144"), "{error}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1, "a refused request is not retried");
    }
}
