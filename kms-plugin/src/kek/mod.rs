//! Key-encryption keys: what the plugin wraps the apiserver's DEKs (or seeds) with.

mod local;
mod remote;

use std::collections::BTreeMap;

use bytes::Bytes;
use zeroize::Zeroizing;

pub use local::{LocalKek, append_random_key};
pub use remote::{RemoteKek, key_id_of};

use crate::config::KekConfig;
pub use mock_kms::api::Caller;

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `call` with every remote KMS call it makes marked as made for `caller` (sent as
/// `x-kms-caller`, recorded in the mock KMS's audit log).
pub async fn as_caller<F: std::future::Future>(caller: Caller, call: F) -> F::Output {
    CALLER.scope(caller, call).await
}

/// Why the current task calls the KMS, if [`as_caller`] said so.
pub fn current_caller() -> Option<Caller> {
    CALLER.try_with(|caller| *caller).ok()
}

/// A DEK as the KEK wrapped it, with what the v2 API returns alongside.
#[derive(Debug, Clone)]
pub struct Wrapped {
    /// The wrapped DEK: the plugin's `ciphertext`.
    pub ciphertext: Bytes,
    /// The id of the KEK version that wrapped it.
    pub key_id: String,
    /// Annotations to return with it (FQDN keys).
    pub annotations: BTreeMap<String, Bytes>,
}

/// What a v2 Decrypt call says the ciphertext came with; v1beta1 carries neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claimed<'a> {
    /// `DecryptRequest.key_id`.
    pub key_id: Option<&'a str>,
    /// `DecryptRequest.annotations`.
    pub annotations: Option<&'a BTreeMap<String, Bytes>>,
}

/// Why wrapping or unwrapping failed. Messages never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The ciphertext is malformed, altered, or not ours.
    #[error("ciphertext rejected: {0}")]
    InvalidCiphertext(String),
    /// The key id or annotations sent with the ciphertext do not match it.
    #[error("{0}")]
    Mismatch(String),
    /// The KEK version that wrapped the ciphertext is not known here.
    #[error("KEK version `{0}` is not known to this plugin (was the key file replaced or the key deleted?)")]
    UnknownKeyVersion(String),
    /// The key cannot be used now (disabled, pending deletion).
    #[error("the KEK cannot be used: {0}")]
    KeyUnusable(String),
    /// The remote KMS refused the credential.
    #[error("the KMS refused the plugin's credential: {0}")]
    Unauthenticated(String),
    /// The credential is valid but not allowed this operation.
    #[error("the KMS denied the operation: {0}")]
    PermissionDenied(String),
    /// The KMS throttled the plugin.
    #[error("the KMS is throttling requests: {0}")]
    Throttled(String),
    /// The KMS did not answer in time.
    #[error("the KMS did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The KMS cannot be reached or is not serving.
    #[error("the KMS is unavailable: {0}")]
    Unavailable(String),
    /// The key file (`--kek-file`) cannot be used: the user's input, not an internal fault.
    /// The message names the file (and line) and what it must hold, never key material.
    #[error("{0}")]
    KeyFile(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl KekError {
    /// The gRPC status code kube-apiserver should see for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::InvalidCiphertext(_) | Self::Mismatch(_) => tonic::Code::InvalidArgument,
            Self::UnknownKeyVersion(_) => tonic::Code::NotFound,
            Self::KeyUnusable(_) | Self::KeyFile(_) => tonic::Code::FailedPrecondition,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Self::Throttled(_) => tonic::Code::ResourceExhausted,
            Self::Timeout(_) => tonic::Code::DeadlineExceeded,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<KekError> for tonic::Status {
    fn from(error: KekError) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}

/// The plugin's KEK backend.
#[derive(Debug)]
pub enum Kek {
    /// An in-process key ring.
    Local(LocalKek),
    /// A key in a remote KMS.
    Remote(RemoteKek),
}

impl Kek {
    /// Builds the backend a configuration names.
    pub fn from_config(config: &KekConfig) -> Result<Self, KekError> {
        match config {
            KekConfig::Local { kek_file } => Ok(Self::Local(match kek_file {
                Some(path) => LocalKek::from_file(path)?,
                None => LocalKek::random(),
            })),
            KekConfig::Remote(remote) => Ok(Self::Remote(RemoteKek::new(remote.clone())?)),
        }
    }

    /// Wraps a DEK (or seed, or any bytes) with the current KEK version.
    pub async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, KekError> {
        match self {
            Self::Local(local) => local.wrap(plaintext),
            Self::Remote(remote) => remote.wrap(plaintext).await,
        }
    }

    /// Unwraps what [`Kek::wrap`] returned, checking what the caller claims came with it.
    pub async fn unwrap(&self, ciphertext: &[u8], claimed: Claimed<'_>) -> Result<Zeroizing<Vec<u8>>, KekError> {
        match self {
            Self::Local(local) => local.unwrap(ciphertext, claimed),
            Self::Remote(remote) => remote.unwrap(ciphertext, claimed).await,
        }
    }

    /// Re-reads the key material (a key file appended by `kms-plugin rotate-kek`).
    pub async fn reload(&self) -> Result<(), KekError> {
        match self {
            Self::Local(local) => local.reload(),
            // The remote KMS rotates on its side; nothing to re-read here.
            Self::Remote(_) => Ok(()),
        }
    }
}
