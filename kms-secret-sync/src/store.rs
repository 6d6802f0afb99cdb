//! A client of the mock KMS's secrets manager ([`mock_kms::api::secrets`]) over its signed
//! native API: what the controller reads with, and what a lab step (or a test) writes with.

use std::time::Duration;

use mock_kms::api::secrets::{
    CreateSecretRequest, DeleteSecretRequest, DeleteSecretResponse, DescribeSecretResponse, GetSecretValueRequest, GetSecretValueResponse,
    PutSecretValueRequest, RotateSecretRequest, SecretMetadata, SecretRequest, SecretVersionResponse, UpdateSecretVersionStageRequest,
    VersionStage,
};
use mock_kms::api::{Action, CallError, Client, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// An access key pair for the store: the mock KMS's own [`mock_kms::api::Credential`] (`Debug`
/// never shows the secret).
pub use mock_kms::api::Credential as StoreCredential;

/// A client of one store endpoint with one credential.
#[derive(Clone)]
pub struct StoreClient {
    client: Client,
    endpoint: String,
    timeout: Duration,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient").field("endpoint", &self.endpoint).field("client", &self.client).finish_non_exhaustive()
    }
}

impl StoreClient {
    /// A client of `endpoint` (`http://host:port`) signing with `credential`, each call bounded by `timeout`.
    pub fn new(http: reqwest::Client, endpoint: &str, credential: StoreCredential, timeout: Duration) -> Self {
        let client = Client::new(http, credential);
        Self { client, endpoint: endpoint.trim_end_matches('/').to_owned(), timeout }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access key calls are signed with.
    pub fn access_key(&self) -> &str {
        self.client.access_key()
    }

    /// One signed call of `action`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(&self, action: Action, request: &Req) -> Result<Resp, StoreError> {
        let body =
            serde_json::to_vec(request).map_err(|e| StoreError::Protocol { action, problem: format!("cannot encode the request: {e}") })?;
        let unavailable = |problem: String| StoreError::Unavailable { action, endpoint: self.endpoint.clone(), problem };
        match self.client.call(&self.endpoint, action, &body, self.timeout, None).await {
            Ok(response) => Ok(response),
            Err(CallError::Timeout) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
            Err(CallError::Unreachable { connect: true }) => Err(unavailable("cannot connect".to_owned())),
            Err(CallError::Unreachable { connect: false }) => Err(unavailable("the request failed".to_owned())),
            Err(CallError::Truncated) => Err(unavailable("the connection closed mid-answer".into())),
            Err(CallError::Malformed(problem)) => {
                Err(StoreError::Protocol { action, problem: format!("the answer is not the expected JSON: {problem}") })
            }
            Err(CallError::Status { status, .. }) => Err(unavailable(format!("HTTP {status} without an error body"))),
            Err(CallError::Unsupported(dialect)) => {
                Err(StoreError::Protocol { action, problem: format!("the store client does not speak the `{dialect}` dialect") })
            }
            Err(CallError::Refused { error, retry_after }) => Err(StoreError::from_code(action, error.code, error.message, retry_after)),
        }
    }

    /// `GetSecretValue` by version id, stage, or (neither) the current version.
    pub async fn get_secret_value(
        &self,
        name: &str,
        version_id: Option<&str>,
        stage: Option<VersionStage>,
    ) -> Result<GetSecretValueResponse, StoreError> {
        let request =
            GetSecretValueRequest { secret_name: name.to_owned(), version_id: version_id.map(str::to_owned), version_stage: stage };
        self.call(Action::GetSecretValue, &request).await
    }

    /// `CreateSecret` with its first value, sealed under `key_id`; the version made.
    pub async fn create_secret(&self, name: &str, value: &str, key_id: &str) -> Result<SecretVersionResponse, StoreError> {
        let request = CreateSecretRequest {
            secret_name: name.to_owned(),
            secret_data: value.to_owned(),
            encryption_key_id: key_id.to_owned(),
            ..Default::default()
        };
        self.call(Action::CreateSecret, &request).await
    }

    /// `PutSecretValue`: a new current version; the version made.
    pub async fn put_secret_value(&self, name: &str, value: &str) -> Result<SecretVersionResponse, StoreError> {
        let request = PutSecretValueRequest { secret_name: name.to_owned(), secret_data: value.to_owned(), ..Default::default() };
        self.call(Action::PutSecretValue, &request).await
    }

    /// `RotateSecret`: a new current version with `value`, or a generated one.
    pub async fn rotate_secret(&self, name: &str, value: Option<&str>) -> Result<SecretVersionResponse, StoreError> {
        let request = RotateSecretRequest { secret_name: name.to_owned(), secret_data: value.map(str::to_owned) };
        self.call(Action::RotateSecret, &request).await
    }

    /// `UpdateSecretVersionStage`: moves `stage` to `version_id` (a rollback with `ACSCurrent`).
    pub async fn move_stage(&self, name: &str, stage: VersionStage, version_id: &str) -> Result<SecretMetadata, StoreError> {
        let request = UpdateSecretVersionStageRequest {
            secret_name: name.to_owned(),
            version_stage: stage,
            move_to_version: Some(version_id.to_owned()),
            remove_from_version: None,
        };
        self.call::<_, DescribeSecretResponse>(Action::UpdateSecretVersionStage, &request).await.map(|r| r.secret)
    }

    /// `DescribeSecret`.
    pub async fn describe_secret(&self, name: &str) -> Result<SecretMetadata, StoreError> {
        self.call::<_, DescribeSecretResponse>(Action::DescribeSecret, &SecretRequest { secret_name: name.to_owned() })
            .await
            .map(|r| r.secret)
    }

    /// `DeleteSecret`: scheduled after `recovery_days`, or at once (`None`).
    pub async fn delete_secret(&self, name: &str, recovery_days: Option<u32>) -> Result<DeleteSecretResponse, StoreError> {
        let request = DeleteSecretRequest {
            secret_name: name.to_owned(),
            recovery_window_in_days: recovery_days,
            force_delete_without_recovery: recovery_days.is_none(),
        };
        self.call(Action::DeleteSecret, &request).await
    }

    /// `RestoreSecret`: cancels a scheduled deletion.
    pub async fn restore_secret(&self, name: &str) -> Result<SecretMetadata, StoreError> {
        self.call::<_, DescribeSecretResponse>(Action::RestoreSecret, &SecretRequest { secret_name: name.to_owned() })
            .await
            .map(|r| r.secret)
    }
}

impl StoreError {
    /// The error for an error answer with `code`.
    pub fn from_code(action: Action, code: ErrorCode, message: String, retry_after: Option<Duration>) -> Self {
        match code {
            // A refused credential (unknown access key, wrong secret) is a denial the user fixes in the store's Secret.
            ErrorCode::Forbidden | ErrorCode::InvalidAccessKeyId | ErrorCode::SignatureDoesNotMatch => Self::Denied { action, message },
            ErrorCode::KeyNotFound => Self::NotFound { action, message },
            ErrorCode::Throttling => Self::Throttled { action, retry_after },
            code if code.retryable() || code == ErrorCode::Sealed => Self::Failed { action, code, message, retryable: true },
            code => Self::Failed { action, code, message, retryable: false },
        }
    }
}
